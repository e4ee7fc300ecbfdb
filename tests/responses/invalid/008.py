"""Content-Length and Transfer-Encoding"""

status = 502
h11_differs = 'cl-and-te'
