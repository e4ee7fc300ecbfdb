"""100 Continue"""

response = {'body': 'none', 'status': 100}
