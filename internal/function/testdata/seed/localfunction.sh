python3 hello-world.py
