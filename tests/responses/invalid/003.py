"""status above 599"""

status = 502
h11_differs = 'status-range'
