"""space before the colon"""

status = 502
