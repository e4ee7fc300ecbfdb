"""bare LF ending the head"""

status = 400
h11_differs = 'bare-lf'
