"""obs-fold"""

status = 502
h11_differs = 'obs-fold'
