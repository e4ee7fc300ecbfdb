"""obs-fold (RFC 9112 5.2)"""

status = 400
h11_differs = 'obs-fold'
