"""two spaces after the method"""

status = 400
