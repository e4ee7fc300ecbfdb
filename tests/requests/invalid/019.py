"""Host with a path"""

status = 400
h11_differs = 'host-syntax'
