"""no SP and no reason (tolerated like h11)"""

response = {'reason': b'', 'status': 404}
