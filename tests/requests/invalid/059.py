"""head longer than max_head"""

status = 431
limits = {'max_head': 60}
h11_differs = 'limits'
