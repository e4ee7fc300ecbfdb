"""authority-form with GET"""

status = 400
h11_differs = 'target-form'
