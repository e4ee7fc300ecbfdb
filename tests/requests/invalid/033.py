"""Content-Length of 2**63"""

status = 400
h11_differs = 'cl-63-bit'
