"""HTTP/1.0 response without keep-alive"""

response = {'keep_alive': False, 'version': b'1.0'}
