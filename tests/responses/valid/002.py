"""chunked response"""

response = {'body': 'chunked'}
