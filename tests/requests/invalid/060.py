"""more fields than max_headers"""

status = 431
limits = {'max_headers': 3}
h11_differs = 'limits'
