"""Content-Length with leading zeros is 1*DIGIT"""

request = {'body': 'length', 'content_length': 5}
