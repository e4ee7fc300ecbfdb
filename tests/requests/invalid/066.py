"""Content-Length spelt with an underscore"""

status = 400
h11_differs = 'underscore-framing'
