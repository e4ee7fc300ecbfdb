"""Host with whitespace inside"""

status = 400
h11_differs = 'host-syntax'
