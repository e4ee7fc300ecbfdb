"""two different Content-Length fields"""

status = 400
