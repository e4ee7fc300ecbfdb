"""whitespace before the first field line"""

status = 400
