"""space between field name and colon"""

status = 400
