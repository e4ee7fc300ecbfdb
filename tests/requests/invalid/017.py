"""two Host fields"""

status = 400
