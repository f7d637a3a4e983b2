"""Simulated prompt augmentation: the prompt bank the trainer samples one prompt from at each step.

The method trains the identity adapter on videos generated from many different prompts (actions, places,
lighting, camera moves, styles) that never describe the reference photo, so the adapter learns the
identity rather than one scene, and training matches how the adapter is used afterwards. The bank holds
texts only; the trainer encodes them with the graph's CLIP.

Plain Python: no torch, no ComfyUI.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import torch

from .logs import pack_logger

log = pack_logger(__name__)

PLACEHOLDER = "{subject}"

# Written for this pack. Each prompt has the placeholder exactly once, shows the subject MOVING (the
# reward needs dynamic videos) and says nothing about a face, hair, age or the reference photo.
BUILT_IN_PROMPTS: tuple[str, ...] = (
    # walking, running, moving through a place
    "{subject} walks along a rainy city street at night, neon signs reflecting in the puddles, tracking shot",
    "{subject} jogs across a wooden bridge in a misty forest at dawn, side tracking shot",
    "{subject} runs along the shoreline as waves wash over the sand, golden hour, slow motion",
    "{subject} strolls through a crowded night market, paper lanterns swaying overhead, handheld camera",
    "{subject} climbs a steep stone staircase in an old hillside village, bright midday sun",
    "{subject} rides a bicycle down a tree-lined avenue in autumn, leaves drifting down, dolly shot",
    "{subject} hikes up a rocky mountain trail with a backpack, clouds rolling past, wide aerial shot",
    "{subject} skateboards through an empty parking garage, fluorescent lights flickering, low angle",
    "{subject} walks through a field of tall sunflowers, brushing them aside, warm late afternoon light",
    "{subject} crosses a busy zebra crossing in Tokyo at dusk, camera slowly pushing in",
    "{subject} wades into a calm turquoise lagoon, sunlight sparkling on the water, drone shot pulling back",
    "{subject} hurries through a train station concourse with a suitcase, departure boards overhead",
    # dancing, sport, whole-body motion
    "{subject} dances salsa in a dimly lit club, coloured spotlights sweeping the room",
    "{subject} spins and twirls in an empty ballroom with chandeliers, camera circling slowly",
    "{subject} practises yoga on a rooftop at sunrise, moving smoothly from pose to pose",
    "{subject} shoots hoops on an outdoor basketball court, evening floodlights, handheld camera",
    "{subject} swims laps in an indoor pool, light rippling across the tiles, overhead shot",
    "{subject} punches a heavy bag in a gritty boxing gym, dust floating in shafts of light",
    "{subject} skis down a powdery slope, snow spraying up behind, bright winter sun",
    "{subject} surfs a rolling wave at sunset, spray catching the orange light, telephoto shot",
    "{subject} does a slow tai chi routine in a misty park at dawn, static wide shot",
    "{subject} dances freely in a summer rain shower in a courtyard, water splashing, slow motion",
    # everyday actions and work
    "{subject} cooks in a bustling restaurant kitchen, flames leaping from a pan, steam rising",
    "{subject} chops vegetables on a wooden counter in a sunny home kitchen, camera tilting up from the board",
    "{subject} pours coffee in a cosy café, morning light through the window, shallow depth of field",
    "{subject} paints on a large canvas in an artist's loft, sweeping brush strokes, soft north light",
    "{subject} plays an acoustic guitar by a campfire under the stars, sparks drifting up",
    "{subject} plays a grand piano on a concert stage, a single spotlight, camera slowly orbiting",
    "{subject} types on a laptop in a modern glass office, then leans back and stretches",
    "{subject} waters plants in a lush greenhouse, mist hanging in the air, gentle dolly shot",
    "{subject} kneads bread dough in a rustic bakery, flour dust in the sunbeams",
    "{subject} repairs a vintage motorcycle in a cluttered garage, warm work lamp light",
    "{subject} reads a book in a library, turning the pages, then looks up toward the window",
    "{subject} carries a stack of boxes up the stairs of a new apartment, daylight, handheld camera",
    "{subject} feeds ducks by a pond in a city park, throwing breadcrumbs, overcast soft light",
    "{subject} unpacks groceries in a small kitchen, opening cupboards, warm evening light",
    # head and upper-body motion, talking, expressions
    "{subject} turns the head to look over the shoulder on a windy cliff top, grey sky, slow push-in",
    "{subject} laughs and talks with friends at a dinner table, candlelight, camera panning across",
    "{subject} speaks into a microphone at a podium, camera slowly zooming in",
    "{subject} looks around in wonder inside a grand cathedral, light streaming through stained glass",
    "{subject} blows out the candles on a birthday cake, then smiles and claps, warm indoor light",
    "{subject} sips tea on a balcony overlooking a foggy valley, then turns toward the camera",
    "{subject} nods along to music with headphones on a moving bus, city lights passing the window",
    "{subject} waves goodbye from the deck of a ferry pulling away from the harbour",
    "{subject} sneezes and then laughs in a sunny flower meadow, handheld close-up",
    "{subject} talks on the phone while pacing in a hotel room, city skyline at night behind",
    # lighting and weather
    "{subject} walks through a snowy forest at blue hour, breath visible in the cold air",
    "{subject} stands in the rain under a flickering street lamp, then opens an umbrella, cinematic noir lighting",
    "{subject} steps out of a tent into the first light of sunrise over a desert, long shadows",
    "{subject} dances in the light of a bonfire on a beach at night, embers swirling",
    "{subject} runs through a thunderstorm across an open field, lightning in the distance",
    "{subject} walks past shop windows in the soft pink light of dusk, camera tracking alongside",
    # camera moves
    "{subject} stands on a rooftop as the camera orbits 360 degrees, city lights at night",
    "{subject} walks toward the camera down a long corridor, symmetrical composition, dolly back",
    "{subject} rides an escalator upward in a modern mall, camera craning up alongside",
    "{subject} jumps off a pier into a lake, camera following in a smooth gimbal shot",
    "{subject} looks out of a train window as the landscape rushes by, slow zoom out",
    # styles
    "{subject} walks along a windswept beach, 1970s film look, grainy 16mm footage",
    "{subject} dances in a living room, vintage VHS home video style, slightly washed-out colours",
    "{subject} rides a horse across a prairie, classic western film, anamorphic widescreen",
    "{subject} explores a neon-lit cyberpunk alley, holographic signs, rain, cinematic colour grade",
    "{subject} wanders through a medieval castle courtyard, epic fantasy film style, torchlight",
    "{subject} paddles a canoe on a glassy lake, documentary style, natural light, drone shot",
    "{subject} walks down a Paris street in black and white, French new wave film style",
    "{subject} floats weightlessly inside a space station, turning slowly, science-fiction film lighting",
    "{subject} jumps over puddles in a school yard, bright saturated music video style, fast cuts",
)

DEFAULT_NEGATIVE = (
    "blurry, low quality, static, frozen, no motion, jittery, flickering, distorted face, deformed face, "
    "extra limbs, deformed hands, duplicate person, watermark, text, subtitles, oversaturated, overexposed"
)


@dataclass(frozen=True)
class PromptBank:
    """The texts the trainer samples from: prompts with the subject filled in, and one negative prompt.

    Attributes:
        prompts: at least one prompt, subject already filled in, no duplicates.
        negative: the negative prompt used for every step (may be empty).
        subject: the subject text that replaced ``{subject}`` (kept for reports).
    """

    prompts: tuple[str, ...]
    negative: str
    subject: str

    def __post_init__(self) -> None:
        if not self.prompts:
            raise ValueError("PromptBank: got no prompts, expected at least one")

    def __len__(self) -> int:
        return len(self.prompts)

    def index(self, seed: int, step: int) -> int:
        """Index of the prompt for training step ``step`` (0-based) of a run seeded with ``seed``.

        Stateless and deterministic: the same (seed, step) gives the same index on any machine, so a
        resumed run continues the same sequence. Steps go through shuffled epochs: every prompt is used
        once in each block of ``len(self)`` steps, in an order that depends on the seed and the epoch.
        """
        if step < 0:
            raise ValueError(f"step: got {step}, expected a step number >= 0")
        n = len(self.prompts)
        epoch, offset = divmod(step, n)
        order = list(range(n))
        # String seeds hash with SHA-512 in random.Random: stable across runs and Python versions.
        random.Random(f"personalvideo-prompts:{seed}:{epoch}").shuffle(order)
        return order[offset]

    def sample(self, seed: int, step: int) -> str:
        """The prompt for training step ``step`` of a run seeded with the integer ``seed`` (see ``index``)."""
        return self.prompts[self.index(seed, step)]


def _lines(text: str) -> list[str]:
    """Non-blank lines of ``text`` without ``#`` comment lines, stripped."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def build_prompt_bank(subject: str, user_prompts: str, negative: str, use_built_in: bool = True) -> PromptBank:
    """Build the prompt bank from the built-in prompts and the user's own.

    Args:
        subject: who the videos show, e.g. "a woman"; replaces every ``{subject}`` placeholder.
        user_prompts: extra prompts, one per line; blank lines and lines starting with ``#`` are ignored.
            A line may contain ``{subject}``; a line without it is used as written.
        negative: the negative prompt (whitespace stripped; may be empty).
        use_built_in: include ``BUILT_IN_PROMPTS`` before the user's prompts.

    Returns:
        A PromptBank whose prompts are de-duplicated, keeping the first occurrence's position.

    Raises:
        ValueError: the bank would be empty, or ``subject`` is empty while a prompt needs it.
    """
    subject = " ".join(subject.split())
    raw = (list(BUILT_IN_PROMPTS) if use_built_in else []) + _lines(user_prompts)
    if not raw:
        raise ValueError(
            "user_prompts: got no prompts (empty, or only blank and # comment lines) with use_built_in off; "
            "expected at least one prompt; write prompts one per line in user_prompts or turn use_built_in on"
        )
    if not subject and any(PLACEHOLDER in p for p in raw):
        needing = "the built-in prompts" if use_built_in else "user_prompts containing {subject}"
        raise ValueError(
            f"subject: got an empty subject, but {needing} need one to fill {{subject}}; "
            "expected a short description such as 'a woman' or 'a man'; type one into subject"
        )
    filled = (p.replace(PLACEHOLDER, subject) for p in raw)
    prompts = tuple(dict.fromkeys(" ".join(p.split()) for p in filled))
    return PromptBank(prompts=prompts, negative=negative.strip(), subject=subject)


class EncodedPrompts:
    """The conditioning of a run's prompts, encoded once before the first step: the bank's prompts and the negative
    (both trainers do this, so a multi-GB text encoder is not needed again mid-run). A text outside them is encoded
    when first asked for, with a warning. ``encoded``: text -> what the backend's model call takes."""

    def __init__(self, encode: Callable[[str], object], negative: str):
        self.encode, self.negative = encode, negative
        self.encoded: dict[str, object] = {}

    def encode_all(self, texts) -> int:
        """Encode ``texts`` and the negative (those not encoded yet); returns how many were new."""
        todo = [t for t in dict.fromkeys([*texts, self.negative]) if t not in self.encoded]
        with torch.no_grad():
            for text in todo:
                self.encoded[text] = self.encode(text)
        return len(todo)

    def __getitem__(self, text: str):
        if text not in self.encoded:
            log.warning("PersonalVideo training: encoding %r mid-run (not among the prompts encoded before training)",
                        text[:60])
            with torch.no_grad():
                self.encoded[text] = self.encode(text)
        return self.encoded[text]
