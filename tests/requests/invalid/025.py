"""two identical Content-Length fields"""

status = 400
h11_differs = 'duplicate-cl'
