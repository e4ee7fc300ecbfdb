"""status below 100"""

status = 502
