"""Content-Length and Transfer-Encoding (CL.TE)"""

status = 400
h11_differs = 'cl-and-te'
