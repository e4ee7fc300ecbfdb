"""bare LF"""

status = 502
h11_differs = 'bare-lf'
