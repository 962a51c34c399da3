"""The prompt-set axis: embedded sets from the seed documents, one frozen entry each.

A `PromptItem` carries whatever one generation needs: a text prompt (text-to-image), an
input image plus instruction and captions (image-to-image / edit, for CLIP directional
similarity), or a class label (class-conditional). Input images come from
scikit-image's sample data: real photographs that ship in a wheel, so offline runs use
real pictures. Large sets (HPD v2, COCO-30k, PartiPrompts, DrawBench) are read from local
files by `accelgate.prompts.files`.
"""
from __future__ import annotations

from dataclasses import dataclass

from accelgate.registry import Registry

# The images scikit-image ships as real photographs (all RGB).
SAMPLE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket")


@dataclass(frozen=True)
class PromptItem:
    prompt: str = ""
    negative_prompt: str = ""
    image: str | None = None  # a name from SAMPLE_IMAGES, or a path to a local image
    input_caption: str = ""  # describes `image` (CLIP directional similarity)
    output_caption: str = ""  # describes the intended edit result
    class_label: str | int | None = None  # an ImageNet word or class index
    style: str = ""  # e.g. HPD v2's Paintings / Photo / Concept-Art / Anime

    def label(self) -> str:
        """A short human description for reports."""
        if self.class_label is not None:
            return f"class {self.class_label}"
        return self.prompt


@dataclass(frozen=True)
class PromptSet:
    name: str
    items: tuple[PromptItem, ...]
    description: str = ""
    source: str = ""

    def limited(self, limit: int | None) -> tuple[PromptItem, ...]:
        if limit is None:
            return self.items
        if limit < 1:
            raise ValueError(f"prompt limit must be >= 1, got {limit}")
        return self.items[:limit]


PROMPT_SETS: Registry[PromptSet] = Registry("prompt set")


def register(prompt_set: PromptSet) -> PromptSet:
    if not prompt_set.items:
        raise ValueError(f"prompt set {prompt_set.name!r} is empty")
    return PROMPT_SETS.register(prompt_set.name, prompt_set)


def get_prompt_set(name: str) -> PromptSet:
    return PROMPT_SETS.get_entry(name)


def load_sample_image(name: str):
    """A PIL RGB image: a scikit-image sample photograph by name, or a local file path."""
    from PIL import Image

    if name in SAMPLE_IMAGES:
        import skimage.data

        return Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    try:
        with Image.open(name) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as error:
        raise ValueError(
            f"input image {name!r} is neither a scikit-image sample ({', '.join(SAMPLE_IMAGES)}) "
            f"nor a readable image file: {error}"
        ) from None


def _texts(name: str, prompts: list[str], description: str, source: str) -> PromptSet:
    return register(PromptSet(name, tuple(PromptItem(prompt=p) for p in prompts), description, source))


_texts(
    "diffusers-guide",
    [
        "a photo of an astronaut riding a horse on mars",
        "A high tech solarpunk utopia in the Amazon rainforest",
        "A pikachu fine dining with a view to the Eiffel Tower",
        "A mecha robot in a favela in expressionist style",
        "an insect robot preparing a delicious meal",
        "A small cabin on top of a snowy mountain in the style of Disney, artstation",
    ],
    "the CLIP-score prompts of the diffusers evaluation guide",
    "seed 003",
)
_texts(
    "parti-sample",
    [
        "a corgi",
        "a hot air balloon with a yin-yang symbol, with the moon visible in the daytime sky",
        "a car with no windows",
        "a cube made of porcupine",
        'The saying "BE EXCELLENT TO EACH OTHER" written on a red brick wall with a graffiti image '
        "of a green alien wearing a tuxedo. A yellow fire hydrant is on a sidewalk in the foreground.",
    ],
    "five PartiPrompts fixed for reproducibility in the diffusers evaluation guide",
    "seed 003",
)
_texts(
    "kolors",
    [
        "穿着黑色T恤的可爱小狗，T恤上面中文绿色大字写着“可图”。",
        "一张兔子的特写照片，春天的森林中，有雾、晕影、开花、戏剧性的氛围，以三分法为中心，200mm 1.4f的微距镜头拍摄。",
        "一条繁忙的街道，车辆在两个方向上行驶，街道上有几辆双层巴士和周围的人们。",
        "动漫风格，一名女孩在室内，坐在客厅的沙发上，拥有粉红色的头发、白色的袜子、蓝色的眼睛，从背后、从上方看，"
        "面向观众，正在玩视频游戏，手持控制器，穿着黑色丝绸，嘴唇微张。",
        "一张年轻中国女性在公园的肖像照片。她的长黑发轻轻飘动。背景中柔和的樱花粉增添了画面的美感。",
    ],
    "the Kolors qualitative prompts (Chinese) of OneDiff's Kolors evaluation",
    "seed 000",
)
_texts(
    "sd2",
    ["beautiful scenery nature glass bottle landscape, , purple galaxy bottle,"],
    "the SD 2.1 prompt of OneDiff's nexfort benchmark",
    "seed 004",
)
_texts(
    "realvis",
    ["best quality, realistic, unreal engine, 4K,a cat sitting on human lap"],
    "the default prompt of OneDiff's text-to-image benchmark script",
    "seed 002",
)

register(
    PromptSet(
        "img2img-photos",
        (
            PromptItem(prompt="turn it into a painting painted by paintbrush", image="astronaut"),
            PromptItem(prompt="turn her into a cyborg", image="astronaut"),
            PromptItem(prompt="a cat in the style of a watercolor painting", image="chelsea"),
        ),
        "image-to-image prompts of the benchmark report, on scikit-image's photographs",
        "seed 002",
    )
)
register(
    PromptSet(
        "pix2pix-edit",
        (
            PromptItem(
                prompt="turn the astronaut into a robot",
                image="astronaut",
                input_caption="a portrait photo of an astronaut in a white space suit",
                output_caption="a portrait photo of a robot in a white space suit",
            ),
            PromptItem(
                prompt="make the cat a tiger",
                image="chelsea",
                input_caption="a photo of a ginger cat",
                output_caption="a photo of a tiger",
            ),
            PromptItem(
                prompt="turn the coffee into tea",
                image="coffee",
                input_caption="a cup of coffee on a saucer",
                output_caption="a cup of green tea on a saucer",
            ),
            PromptItem(
                prompt="make it a painting",
                image="rocket",
                input_caption="a photo of a rocket on a launch pad",
                output_caption="a painting of a rocket on a launch pad",
            ),
        ),
        "an InstructPix2Pix edit set (input caption, instruction, output caption, image) "
        "in the shape of the diffusers guide's instructpix2pix-demo, on offline photographs",
        "seed 003",
    )
)
register(
    PromptSet(
        "imagenet-classes",
        tuple(
            PromptItem(class_label=word)
            for word in (
                "cassette player", "chainsaw", "chainsaw", "church", "gas pump",
                "gas pump", "gas pump", "parachute", "parachute", "tench",
            )
        ),
        "the ImageNet-1k class words of the diffusers guide's DiT FID example",
        "seed 003",
    )
)
