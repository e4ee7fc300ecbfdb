"""HTTP/1.0 request with Content-Length"""

request = {'body': 'length', 'content_length': 2, 'keep_alive': False, 'version': b'1.0'}
