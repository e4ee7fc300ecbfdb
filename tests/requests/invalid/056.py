"""relative target"""

status = 400
h11_differs = 'target-form'
