"""Transfer-Encoding in two fields"""

status = 400
