"""POST with Content-Length; the body is not part of the head"""

request = {'body': 'length', 'content_length': 5, 'method': b'POST'}
