/** Every transport the conformance suite runs against. */
import type { TransportFixture } from "./fixture.ts";
import { mqttFixture } from "./mqtt_fixture.ts";
import { websocketFixture } from "./websocket_fixture.ts";

export const FIXTURES: TransportFixture[] = [websocketFixture, mqttFixture];
