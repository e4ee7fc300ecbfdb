"""304 has no body even with Content-Length"""

response = {'body': 'none', 'status': 304}
