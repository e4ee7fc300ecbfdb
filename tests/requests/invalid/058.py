"""target longer than max_target"""

status = 414
limits = {'max_target': 16}
h11_differs = 'limits'
