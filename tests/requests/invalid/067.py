"""absolute-form with a query but no path"""

status = 400
h11_differs = 'target-form'
