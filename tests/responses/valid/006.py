"""a response to HEAD has no body"""

request_method = b'HEAD'
response = {'body': 'none'}
