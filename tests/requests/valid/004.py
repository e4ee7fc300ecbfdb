"""chunked request body with a trailer"""

request = {'body': 'chunked'}
