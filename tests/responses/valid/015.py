"""identical duplicate Content-Length is tolerated in a response"""

response = {'body': 'length', 'content_length': 3}
