"""2-D sine-cosine position embedding of the AIFI encoder layer."""
import torch


def build_2d_sincos_position_embedding(w: int, h: int, embed_dim: int = 256,
                                       temperature: float = 10000.0,
                                       device=None) -> torch.Tensor:
    """Fixed position embedding of an h x w feature map, shape (1, h*w, embed_dim).

    Channels are [sin(x*omega), cos(x*omega), sin(y*omega), cos(y*omega)] with
    ``omega_i = temperature ** (-i / (embed_dim/4))``.

    NOTE: reproduces the official (and transformers') grid order exactly:
    ``meshgrid(arange(w), arange(h), indexing='ij')`` flattened w-major, while
    features are flattened h-major, so on non-square maps the "x" and "y"
    channels do not follow the pixel's column and row. Trained weights depend
    on this order, so we keep it.
    """
    if embed_dim % 4:
        raise ValueError(f'embed_dim must be divisible by 4, got {embed_dim}')
    grid_w, grid_h = torch.meshgrid(torch.arange(int(w), dtype=torch.float32, device=device),
                                    torch.arange(int(h), dtype=torch.float32, device=device),
                                    indexing='ij')
    pos_dim = embed_dim // 4
    omega = 1.0 / temperature ** (torch.arange(pos_dim, dtype=torch.float32, device=device) / pos_dim)
    out_w = grid_w.flatten()[:, None] * omega[None]
    out_h = grid_h.flatten()[:, None] * omega[None]
    return torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)[None]
