"""The article's Pattern 2, ``StreamEventBus``, exactly as *How to Implement Event-Driven
Microservices with Redis* prints it (shared/reference/event-driven-microservices-with-redis.md):
the peer the benchmark measures eventbus against. Do not "fix" it: its one XADD per stream,
unpipelined, and its XACK per entry are what is being compared.
"""
import redis
import json
import threading
import time
import uuid
from typing import Dict, Any, Callable, List, Optional
from dataclasses import dataclass, asdict, field
import logging

logger = logging.getLogger(__name__)

@dataclass
class StreamEvent:
    event_id: str
    event_type: str
    source: str
    data: Dict[str, Any]
    timestamp: float
    metadata: Dict[str, Any] = field(default_factory=dict)
    stream_id: str = None

class StreamEventBus:
    def __init__(self, redis_client: redis.Redis, service_name: str,
                 namespace: str = "eventbus"):
        self.redis = redis_client
        self.service_name = service_name
        self.namespace = namespace
        self._handlers: Dict[str, List[Callable]] = {}
        self._running = False
        self._consumer_group = f"{service_name}-consumers"

    def _stream_key(self, event_type: str = None) -> str:
        if event_type:
            return f"{self.namespace}:stream:{event_type}"
        return f"{self.namespace}:stream:all"

    def publish(self, event_type: str, data: Dict[str, Any],
                metadata: Dict[str, Any] = None) -> str:
        """Publish event to stream."""
        event = StreamEvent(
            event_id=str(uuid.uuid4()),
            event_type=event_type,
            source=self.service_name,
            data=data,
            timestamp=time.time(),
            metadata=metadata or {}
        )

        # Publish to type-specific stream
        stream_key = self._stream_key(event_type)
        entry = {
            "event_id": event.event_id,
            "event_type": event.event_type,
            "source": event.source,
            "data": json.dumps(event.data),
            "timestamp": str(event.timestamp),
            "metadata": json.dumps(event.metadata)
        }

        stream_id = self.redis.xadd(stream_key, entry, maxlen=100000)

        # Also publish to global stream
        global_stream = self._stream_key()
        self.redis.xadd(global_stream, {
            **entry,
            "original_stream": stream_key
        }, maxlen=500000)

        logger.debug(f"Published {event_type}: {event.event_id}")

        return stream_id.decode() if isinstance(stream_id, bytes) else stream_id

    def subscribe(self, event_type: str, handler: Callable[[StreamEvent], None]):
        """Subscribe to event type."""
        if event_type not in self._handlers:
            self._handlers[event_type] = []
        self._handlers[event_type].append(handler)

    def subscribe_all(self, handler: Callable[[StreamEvent], None]):
        """Subscribe to all events."""
        self.subscribe("*", handler)

    def start(self, from_beginning: bool = False):
        """Start consuming events."""
        self._running = True

        # Create consumer groups for each event type
        for event_type in self._handlers.keys():
            if event_type == "*":
                stream_key = self._stream_key()
            else:
                stream_key = self._stream_key(event_type)

            try:
                start_id = "0" if from_beginning else "$"
                self.redis.xgroup_create(
                    stream_key,
                    self._consumer_group,
                    id=start_id,
                    mkstream=True
                )
            except redis.ResponseError:
                pass  # Group exists

        thread = threading.Thread(target=self._consume_loop)
        thread.daemon = True
        thread.start()

        logger.info(f"Stream event bus started for {self.service_name}")

    def stop(self):
        """Stop consuming events."""
        self._running = False

    def _consume_loop(self):
        """Main consumption loop."""
        consumer_name = f"{self.service_name}-{uuid.uuid4().hex[:8]}"

        # Build streams dict
        streams = {}
        for event_type in self._handlers.keys():
            if event_type == "*":
                stream_key = self._stream_key()
            else:
                stream_key = self._stream_key(event_type)
            streams[stream_key] = ">"

        while self._running:
            try:
                messages = self.redis.xreadgroup(
                    self._consumer_group,
                    consumer_name,
                    streams,
                    count=100,
                    block=5000
                )

                if not messages:
                    continue

                for stream_key, entries in messages:
                    for message_id, data in entries:
                        self._process_message(stream_key, message_id, data)

            except redis.RedisError as e:
                logger.error(f"Redis error: {e}")
                time.sleep(1)

    def _process_message(self, stream_key: bytes, message_id: bytes,
                         data: Dict[bytes, bytes]):
        """Process a single message."""
        if isinstance(stream_key, bytes):
            stream_key = stream_key.decode()

        decoded = {
            k.decode() if isinstance(k, bytes) else k:
            v.decode() if isinstance(v, bytes) else v
            for k, v in data.items()
        }

        event = StreamEvent(
            event_id=decoded["event_id"],
            event_type=decoded["event_type"],
            source=decoded["source"],
            data=json.loads(decoded["data"]),
            timestamp=float(decoded["timestamp"]),
            metadata=json.loads(decoded.get("metadata", "{}")),
            stream_id=message_id.decode() if isinstance(message_id, bytes) else message_id
        )

        # Find handlers
        handlers = []
        if event.event_type in self._handlers:
            handlers.extend(self._handlers[event.event_type])
        if "*" in self._handlers:
            handlers.extend(self._handlers["*"])

        # Process
        for handler in handlers:
            try:
                handler(event)
            except Exception as e:
                logger.error(f"Handler error for {event.event_type}: {e}")

        # Acknowledge
        self.redis.xack(stream_key, self._consumer_group, message_id)
