"""500 with a body"""

response = {'status': 500}
