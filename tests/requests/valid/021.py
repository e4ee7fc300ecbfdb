"""pipelined requests: only the first head is consumed"""

request = {'target': b'/1'}
