"""Host with a non-numeric port"""

status = 400
h11_differs = 'host-syntax'
