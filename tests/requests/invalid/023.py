"""absolute-form with an empty authority"""

status = 400
h11_differs = 'target-form'
