"""non-token byte in a field name"""

status = 400
