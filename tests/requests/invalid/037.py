"""Transfer-Encoding with an empty list element"""

status = 400
