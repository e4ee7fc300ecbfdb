"""bare LF line endings"""

status = 400
h11_differs = 'bare-lf'
