"""field line without a colon"""

status = 400
