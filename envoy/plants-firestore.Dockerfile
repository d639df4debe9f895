# The plants app on Firestore (examples/plants_firestore.py, Google's official client), for
# envoy/docker-compose.yaml.
FROM python:3.12-slim
RUN pip install --no-cache-dir google-cloud-firestore==2.20.1
COPY examples/plants_firestore.py /usr/local/bin/plants_firestore.py
CMD ["python", "/usr/local/bin/plants_firestore.py"]
