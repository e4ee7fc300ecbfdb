"""close-delimited response"""

response = {'body': 'close', 'keep_alive': False}
