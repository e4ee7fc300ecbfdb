"""bare LF ending one field line"""

status = 400
h11_differs = 'bare-lf'
