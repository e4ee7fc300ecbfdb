"""empty method"""

status = 400
