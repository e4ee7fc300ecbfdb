"""Content-Length as a list"""

status = 400
h11_differs = 'duplicate-cl'
