"""NUL in a field value"""

status = 400
