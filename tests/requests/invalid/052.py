"""non-token byte in the method"""

status = 400
